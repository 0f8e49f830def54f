"""The lambda sweep: an Optuna study of the rate penalty's strength, shared by workers on one
or several machines, and the choice of lambda from its trials.

- ``config``: what a sweep is asked to do (light: the parameter models read it);
- ``policy``: which trial is chosen, taken on, interpolated (pure, on records);
- ``early_stop``: when a trial stops before the end of its fine-tuning (pure);
- ``storage``: the study's database, trials owned from their creation;
- ``recovery``: dead and stopped workers' trials failed and queued again;
- ``study``: running a study, resumed and shared;
- ``tracking``: trials as nested MLflow runs, the chosen one tagged;
- ``tune``: one sweep from start to decision.
"""
