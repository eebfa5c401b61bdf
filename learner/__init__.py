"""The DeepSpeed learner: worker, group (one torch.distributed world) and weight sync to the engines."""
