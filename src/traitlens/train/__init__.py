"""Fine-tuning one LoRA adapter per source: encoding with loss masks, the training loop."""

# Bump when the training loop changes what it produces, so adapters of the old code are not
# served for the new (it enters every training job's key). 2: bfloat16 training adds the LoRA
# product in float32 (`lora_step.py`), which trains a different adapter.
TRAIN_CODE_VERSION = 2

# Training settings that change how a run proceeds but not the adapter it ends with: left out of
# the key (and of the settings recorded with the adapter).
NOT_RESULT_TRAINING = {"seeds", "checkpoint_every", "gradient_checkpointing", "packing", "pass_tokens"}

# Settings added after stores existed: in a key only when set away from their default, so
# adapters trained before them keep their keys (their value then was the default).
KEYED_WHEN_SET = {"max_tokens": None, "validation": None, "seed_streams": "shared"}
