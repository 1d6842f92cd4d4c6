"""First-party training stages: next-token pre-training and supervised fine-tuning on chats."""
