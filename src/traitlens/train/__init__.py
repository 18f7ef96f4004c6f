"""Fine-tuning one LoRA adapter per source: encoding with loss masks, the training loop."""

# Bump when the training loop changes what it produces, so adapters of the old code are not
# served for the new (it enters every training job's key). 2: bfloat16 training adds the LoRA
# product in float32 (`lora_step.py`), which trains a different adapter. 3: the base is loaded
# in the training dtype and LoRA's A matrices are drawn from their own generator (`init_lora`).
TRAIN_CODE_VERSION = 3
