"""CAM sources, pure torch: CLIP-ES softmax-GradCAM, prompts, class-aware attention affinity."""
