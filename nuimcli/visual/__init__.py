"""Drawing and figures: the shared class palette, instances on images, matplotlib figures."""
