"""What the views need from a decode step, and the probes that read it from inside the model: attention, the logit lens, the cache grid."""
