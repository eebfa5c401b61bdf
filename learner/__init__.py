"""The DeepSpeed learner: worker and group (one torch.distributed world); it sends weights through rl.weight_sync."""
