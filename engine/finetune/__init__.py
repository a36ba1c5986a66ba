"""Fine-tuning on the user's own questions and answers: data checks, unit targets, the two
training stages, evaluation, and the adapter folder the app loads (``python -m engine finetune``)."""
