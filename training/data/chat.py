"""A conversation -> model inputs, through the model's own chat template.

Every stage builds a `Conversation` (system, user and assistant turns; user turns hold
text and page images) and encodes it here, so what is trained on is laid out exactly
as the served model sees it: `processor.apply_chat_template` renders the turns, with each
text replaced by a marker, and the rendered string is then tokenised piece by piece:

- the template's own text (`[gMASK]<sop>`, `<|user|>`, ...) with its special tokens;
- message text, where a string that looks like a control token (`<|endoftext|>`,
  `<|image|>`) stays text. Document text (`literal` parts: pages' text, OCR targets)
  keeps every added token as text; a model's reply keeps its content tags (`<think>`);
- each image as its run of image tokens, counted from the image's size alone (the
  processor's own resize rule), so a sample's length is known without decoding pixels.

Labels cover each trained assistant turn's text and the token that ends the turn (for
GLM-4.1V `<|user|>`, which the served model stops on), and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from training.errors import UsageError

IGNORE = -100
_MARK = "\ue000{}\ue001"
_MARK_RE = re.compile("\ue000(\\d+)\ue001")
_CONTENT_TAG = re.compile(r"^</?[A-Za-z_]+>$")  # <think>, </answer>: content, not control


class PromptTooLong(ValueError):
    """The prompt alone does not fit in max_length: the sample cannot be trained on."""


class TemplateError(UsageError):
    """The model's chat template is missing or rewrites message text."""


@dataclass
class Text:
    text: str
    literal: bool = False  # document text: every added token stays text


@dataclass
class Image:
    image: object  # a PIL image (may be lazily opened: only its size is read until pixels are needed)


@dataclass
class Turn:
    role: str  # system, user or assistant
    parts: list  # Text and Image
    train: bool = False  # an assistant turn whose text (and end-of-turn token) is supervised


@dataclass
class Conversation:
    turns: list[Turn]
    key: str = ""
    task: str = "sft"
    meta: dict = field(default_factory=dict)

    @property
    def images(self) -> list:
        return [p.image for t in self.turns for p in t.parts if isinstance(p, Image)]

    @property
    def reference(self) -> str:
        """The last assistant turn's text (what RL rewards compare against)."""
        for turn in reversed(self.turns):
            if turn.role == "assistant":
                return "".join(p.text for p in turn.parts if isinstance(p, Text))
        return ""


def _template_messages(turns: list[Turn]) -> tuple[list[dict], list[Text]]:
    """Messages for apply_chat_template with each text replaced by a numbered marker."""
    texts: list[Text] = []

    def mark(part: Text) -> str:
        texts.append(part)
        return _MARK.format(len(texts) - 1)

    messages = []
    for turn in turns:
        if turn.role == "user":
            content = [{"type": "image"} if isinstance(p, Image) else {"type": "text", "text": mark(p)}
                       for p in turn.parts]
        else:  # system and assistant content are plain strings in GLM-style templates
            if any(isinstance(p, Image) for p in turn.parts):
                raise TemplateError(f"a {turn.role} turn cannot hold images")
            content = "".join(mark(p) for p in turn.parts)
        messages.append({"role": turn.role, "content": content})
    return messages, texts


class ChatEncoder:
    """Encodes Conversations for one processor (tokenizer, image processor, chat template)."""

    def __init__(self, processor):
        self.processor, self.tokenizer = processor, processor.tokenizer
        if not getattr(processor, "chat_template", None):
            raise TemplateError("the model folder has no chat template (chat_template.jinja): the prompt layout "
                                "would not match what the model is served with")
        self.image_token = processor.image_token
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        added = [str(t) for t in self.tokenizer.get_added_vocab()]
        control = sorted((t for t in added if not _CONTENT_TAG.match(t)), key=len, reverse=True)
        self._control = re.compile("|".join(map(re.escape, control))) if control else None
        self._pieces = re.compile(f"(\ue000\\d+\ue001|{re.escape(self.image_token)})")
        self.end_of_turn = self._end_of_turn()
        merge = getattr(processor.image_processor, "merge_size", 2)
        self._merge = merge * merge

    def render(self, turns: list[Turn], add_generation_prompt: bool = False) -> tuple[str, list[Text]]:
        messages, texts = _template_messages(turns)
        rendered = self.processor.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
        found = [int(m) for m in _MARK_RE.findall(rendered)]
        if found != list(range(len(texts))):
            raise TemplateError("the chat template drops, repeats or reorders message text; cannot map labels")
        return rendered, texts

    def _end_of_turn(self) -> int:
        """The token the template puts right after an assistant turn's text (GLM: <|user|>; ChatML: <|im_end|>)."""
        probe = [Turn("user", [Text("a")]), Turn("assistant", [Text("b")]), Turn("user", [Text("c")])]
        rendered, _ = self.render(probe)
        after = rendered.split(_MARK.format(1), 1)[1].split(_MARK.format(2), 1)[0]
        ids = self.tokenizer(after, add_special_tokens=False)["input_ids"]
        if not ids:
            raise TemplateError("the chat template puts nothing between turns: no end-of-turn token to train")
        return ids[0]

    def text_ids(self, part: Text) -> list[int]:
        if part.literal or self._control is None:
            return self.tokenizer(part.text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        ids, start = [], 0
        for match in self._control.finditer(part.text):  # control-token look-alikes stay text
            ids += self.tokenizer(part.text[start:match.start()], add_special_tokens=False)["input_ids"]
            ids += self.tokenizer(match.group(), add_special_tokens=False, split_special_tokens=True)["input_ids"]
            start = match.end()
        return ids + self.tokenizer(part.text[start:], add_special_tokens=False)["input_ids"]

    def image_tokens(self, image) -> int:
        width, height = image.size
        return self.processor.image_processor.get_number_of_image_patches(height, width, {}) // self._merge

    def encode(self, conversation: Conversation, max_length: int | None = None,
               add_generation_prompt: bool = False, pixels: bool = True) -> dict:
        """input_ids, labels, mm_token_type_ids (1 on image tokens) and, with pixels, the image tensors.

        A target that runs past max_length is truncated; a prompt that alone does not fit raises PromptTooLong.
        """
        import torch

        rendered, texts = self.render(conversation.turns, add_generation_prompt)
        owner = {id(p): t for t in conversation.turns for p in t.parts}
        images = iter(conversation.images)
        ids: list[int] = []
        labels: list[int] = []
        kinds: list[int] = []
        label_next = False  # the template token right after a trained turn ends it
        for piece in self._pieces.split(rendered):
            if not piece:
                continue
            if piece == self.image_token:
                count = self.image_tokens(next(images))
                ids += [self.image_token_id] * count
                labels += [IGNORE] * count
                kinds += [1] * count
                label_next = False
                continue
            mark = _MARK_RE.fullmatch(piece)
            if mark:
                part = texts[int(mark.group(1))]
                piece_ids = self.text_ids(part)
                trained = owner[id(part)].train
                label_next = trained
            else:
                piece_ids = self.tokenizer(piece, add_special_tokens=False)["input_ids"]
                trained = False
            ids += piece_ids
            kinds += [0] * len(piece_ids)
            if trained:
                labels += piece_ids
            elif label_next and not mark and piece_ids:
                labels += [piece_ids[0]] + [IGNORE] * (len(piece_ids) - 1)
                label_next = False
            else:
                labels += [IGNORE] * len(piece_ids)
        if label_next:  # the conversation ends on a trained turn: close it as the template would
            ids.append(self.end_of_turn)
            labels.append(self.end_of_turn)
            kinds.append(0)
        prompt_length = next((i for i, label in enumerate(labels) if label != IGNORE), len(labels))
        if max_length is not None:
            if prompt_length >= max_length:
                raise PromptTooLong(f"{conversation.key}: prompt of {prompt_length} tokens does not fit in "
                                    f"max_length {max_length}")
            ids, labels, kinds = ids[:max_length], labels[:max_length], kinds[:max_length]
        encoded = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
                   "labels": torch.tensor([labels]), "mm_token_type_ids": torch.tensor([kinds])}
        if pixels and conversation.images:
            encoded.update(self.pixels(conversation.images, expected=sum(kinds)))
        return encoded

    def length(self, conversation: Conversation, add_generation_prompt: bool = False) -> int:
        """Tokens the conversation takes, without touching pixels."""
        encoded = self.encode(conversation, add_generation_prompt=add_generation_prompt, pixels=False)
        return int(encoded["input_ids"].shape[1])

    def pixels(self, images: list, expected: int | None = None) -> dict:
        out = self.processor.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        grid = out["image_grid_thw"]
        if expected is not None and int(grid.prod(-1).sum()) // self._merge != expected:
            raise ValueError("image token count differs from the image processor's grid")
        return {"pixel_values": out["pixel_values"], "image_grid_thw": grid}
