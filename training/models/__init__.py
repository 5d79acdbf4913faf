"""Model loading: any Hugging Face image-text-to-text model, plus the project's tiny GLM-4.1V."""

from training.models.processor import Glm4vImageOnlyProcessor, load_model_and_processor

__all__ = ["Glm4vImageOnlyProcessor", "load_model_and_processor"]
