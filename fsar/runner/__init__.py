"""Running matchers on a feature cache: feature loading, evaluation, training of learned heads, checkpoints."""
