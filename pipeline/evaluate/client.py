"""A minimal OpenAI-compatible chat client (vLLM, SGLang, hosted APIs), standard library only.

Bounded: a timeout per request and a few retries with backoff on 5xx,
429 and connection errors; then a clear ChatError. The API key comes from the
argument or OPENAI_API_KEY and never appears in errors.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request


class ChatError(RuntimeError):
    pass


class ChatClient:
    def __init__(self, endpoint: str, model: str, api_key: str | None = None, timeout: float = 120.0,
                 retries: int = 2):
        base = endpoint.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model, self.timeout, self.retries = model, timeout, retries
        self._key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")

    def chat(self, messages: list[dict], max_tokens: int = 1024, temperature: float = 0.0) -> dict:
        """The response's message text and usage: {"text": str, "usage": dict}."""
        body = json.dumps({"model": self.model, "messages": messages, "max_tokens": max_tokens,
                           "temperature": temperature}).encode()
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(2 ** attempt * 0.25, 4.0))
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = json.loads(response.read())
                return {"text": payload["choices"][0]["message"]["content"] or "",
                        "usage": payload.get("usage") or {}}
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}"
                if err.code < 500 and err.code != 429:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last = type(getattr(err, "reason", err)).__name__
            except (json.JSONDecodeError, KeyError, IndexError, TypeError):
                last = "malformed response"
                break
        raise ChatError(f"chat request to {self.url} failed: {last}")


def image_part(png: bytes) -> dict:
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}}
