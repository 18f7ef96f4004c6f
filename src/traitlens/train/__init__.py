"""Fine-tuning one LoRA adapter per source: encoding with loss masks, the training loop."""

# Bump when the training loop changes what it produces, so adapters of the old code are not
# served for the new (it enters every training job's key). 2: bfloat16 training adds the LoRA
# product in float32 (`lora_step.py`), which trains a different adapter.
TRAIN_CODE_VERSION = 2
