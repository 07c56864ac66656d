from .config import MPLoraConfig
from .layer import MPLoraLayer, orthogonality_loss
from .model import MPLoraModel

__all__ = ["MPLoraConfig", "MPLoraLayer", "MPLoraModel", "orthogonality_loss"]
