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


AutoProcessor.register(Glm4vConfig, Glm4vImageOnlyProcessor, exist_ok=True)


def load_model_and_processor(path: str, dtype=None):
    """A model folder, hub id or s3:// prefix -> (AutoModelForImageTextToText model, AutoProcessor processor)."""
    from transformers import AutoModelForImageTextToText

    path = local_model_path(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
    processor = AutoProcessor.from_pretrained(path)
    return model, processor


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
