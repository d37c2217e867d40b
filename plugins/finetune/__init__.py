"""The finetune plugin (see README.md)."""
