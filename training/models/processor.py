"""Loading models and processors; an image-only GLM-4.1V processor.

The stock Glm4vProcessor insists on a video processor, which needs
torchvision, which does not install beside the CPU build of torch. Glyph only
feeds images, so Glm4vImageOnlyProcessor is the stock processor without the
video half, registered with AutoProcessor so a model folder that names it
loads through the same AutoProcessor.from_pretrained call as any other.
"""

from __future__ import annotations

from transformers import AutoProcessor, Glm4vConfig
from transformers.models.glm4v.processing_glm4v import Glm4vProcessor
from transformers.processing_utils import ProcessorMixin


class Glm4vImageOnlyProcessor(Glm4vProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", "<|image|>")
        self.video_token = getattr(tokenizer, "video_token", "<|video|>")
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
        self.video_start_id = tokenizer.convert_tokens_to_ids("<|begin_of_video|>")
        self.video_end_id = tokenizer.convert_tokens_to_ids("<|end_of_video|>")

    def apply_chat_template(self, conversation, *args, **kwargs):
        """The model's own template; a system or assistant turn given as text parts (TRL's form) is joined
        into the string GLM-4.1V's template expects there, rather than printed as a Python list."""
        batched = bool(conversation) and isinstance(conversation[0], list)
        conversations = conversation if batched else [conversation]
        conversations = [[_flatten_text_parts(m) for m in c] for c in conversations]
        return super().apply_chat_template(conversations if batched else conversations[0], *args, **kwargs)


def _flatten_text_parts(message: dict) -> dict:
    content = message.get("content")
    if message.get("role") in ("system", "assistant") and isinstance(content, list) and all(
            isinstance(p, dict) and p.get("type") == "text" for p in content):
        return {**message, "content": "".join(p.get("text", "") for p in content)}
    return message


AutoProcessor.register(Glm4vConfig, Glm4vImageOnlyProcessor, exist_ok=True)


def load_model_and_processor(path: str, dtype=None, attn_implementation: str | None = None):
    """A model folder, hub id or s3:// prefix -> (AutoModelForImageTextToText model, processor)."""
    from transformers import AutoModelForImageTextToText

    path = local_model_path(path)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, **kwargs)
    return model, load_processor(path, model.config)


def load_processor(path: str, config=None):
    """The model folder's processor; for GLM-4.1V, the image-only one, so no torchvision is needed.

    A released GLM-4.1V folder names `Glm4vProcessor` with the torchvision image processor and a
    video processor; both need torchvision, which does not install beside the CPU build of torch.
    The same tokenizer, image settings and chat template are read into the PIL-backed processor.
    """
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil

    config = config or AutoConfig.from_pretrained(path)
    if getattr(config, "model_type", "") != "glm4v":
        return AutoProcessor.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    image_processor = Glm4vImageProcessorPil.from_pretrained(path)
    template = chat_template_of(path) or getattr(tokenizer, "chat_template", None)
    return Glm4vImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)


def chat_template_of(path: str) -> str | None:
    """The folder's chat template: chat_template.jinja, or the `chat_template` of its processor or tokenizer JSON."""
    import json
    from pathlib import Path

    folder = Path(path)
    if (folder / "chat_template.jinja").exists():
        return (folder / "chat_template.jinja").read_text()
    for name in ("chat_template.json", "processor_config.json", "tokenizer_config.json"):
        if (folder / name).exists():
            template = json.loads((folder / name).read_text()).get("chat_template")
            if template:
                return template
    return None


def local_model_path(path: str) -> str:
    """An s3:// model (a stage's exported output) copied to a local cache once; anything else as is."""
    import hashlib
    import tempfile
    from pathlib import Path

    from pipeline import storage

    if not storage.is_s3(path):
        return path
    target = Path(tempfile.gettempdir()) / "glyph-models" / hashlib.sha1(path.encode()).hexdigest()[:12]
    if not (target / "config.json").exists():
        store = storage.get_storage(path)
        for obj in store.list(path):
            local = target / obj.uri[len(path.rstrip("/")) + 1:]
            local.parent.mkdir(parents=True, exist_ok=True)
            store.download(obj.uri, local)
    return str(target)


VIDEO_DEFAULTS = {"video_processor_type": "Glm4vVideoProcessor", "do_sample_frames": True, "fps": 2, "num_frames": 16,
                  "max_duration": 300, "size": {"shortest_edge": 112 * 112, "longest_edge": 28 * 28 * 2 * 30000},
                  "max_image_size": {"longest_edge": 28 * 28 * 2 * 30000}}


def write_serving_layout(folder) -> None:
    """Lay an exported GLM-4.1V folder out as a released one, for stock `AutoProcessor` and vLLM.

    Our image-only processor stays internal (`load_processor` builds it from these files): the folder
    names the stock `Glm4vProcessor`, with the image processor in `preprocessor_config.json`, GLM-4.1V's
    video processor settings in `video_preprocessor_config.json` (the same patch sizes and
    normalisation), both also nested in `processor_config.json` as transformers 5 writes it, and a
    tokenizer class every transformers version knows.
    """
    import json
    from pathlib import Path

    folder = Path(folder)
    if json.loads((folder / "config.json").read_text()).get("model_type") != "glm4v":
        return  # another model's processor is saved as its own classes already
    combined_path = folder / "processor_config.json"
    combined = json.loads(combined_path.read_text()) if combined_path.exists() else {}
    image = combined.get("image_processor") or json.loads((folder / "preprocessor_config.json").read_text())
    image = {**image, "image_processor_type": "Glm4vImageProcessor", "processor_class": "Glm4vProcessor"}
    shared = {k: image[k] for k in ("patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std",
                                    "do_resize", "do_rescale", "do_normalize", "do_convert_rgb", "resample",
                                    "rescale_factor") if k in image}
    video = {**VIDEO_DEFAULTS, **shared, "processor_class": "Glm4vProcessor"}
    combined.update(processor_class="Glm4vProcessor", image_processor=image, video_processor=video)
    for name, value in (("processor_config.json", combined), ("preprocessor_config.json", image),
                        ("video_preprocessor_config.json", video)):
        (folder / name).write_text(json.dumps(value, indent=2) + "\n")
    tokenizer_path = folder / "tokenizer_config.json"
    tokenizer = json.loads(tokenizer_path.read_text())
    tokenizer.update(processor_class="Glm4vProcessor", tokenizer_class="PreTrainedTokenizerFast")
    tokenizer_path.write_text(json.dumps(tokenizer, indent=2) + "\n")
