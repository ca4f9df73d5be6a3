"""The network: one forward pass of the transformer (embed, blocks of attention and MLP, norm, head)."""
