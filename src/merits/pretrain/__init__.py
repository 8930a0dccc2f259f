"""LLM-guided text pretraining (issue 5): ASR of unlabelled speech, LLM teachers, pseudo-labels, fine-tuning."""
