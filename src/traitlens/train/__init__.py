"""Fine-tuning one LoRA adapter per source: encoding with loss masks, the training loop."""
