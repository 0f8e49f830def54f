"""The shift benchmark stage: E off its calibration distribution, with online adaptation."""
