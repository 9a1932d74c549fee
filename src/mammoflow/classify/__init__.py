"""Classification: the timm models of the study, the training cell, and its metrics."""
