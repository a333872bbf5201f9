"""PEFT Explorer: explore the tradeoffs of parameter-efficient fine-tuning.

Pure logic lives in this package; only ``explorer.ui`` imports gradio.
"""

__version__ = "0.1.0"
