"""Training half of onedge: data, multi-branch models, distillation methods, trainer."""
