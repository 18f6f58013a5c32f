"""The anomaly model: the replay dataset, training, loading, evaluation."""
