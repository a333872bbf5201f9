"""The web UI: the only part of PEFT Explorer that imports gradio. One file per tab."""
