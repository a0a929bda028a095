"""The AWNN regime's penalty as the training loop adds it (experiments/train.py `fit`)."""

def plus_penalty(loss, regime, ctx):
    """loss + the regime's loss-term penalty, as the training loop adds it (None: nothing)."""
    penalty = regime.penalty(ctx)
    return loss if penalty is None else loss + penalty
