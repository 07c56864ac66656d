from .config import LoRATRFConfig
from .layer import LoRATRFLayer, relevance_gate
from .model import LoRATRFModel

__all__ = ["LoRATRFConfig", "LoRATRFLayer", "LoRATRFModel", "relevance_gate"]
