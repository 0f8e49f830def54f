"""Stage 5: the Optuna sweep of lambda, then the regularised event-driven fine-tuning of E."""
