"""The run report: markdown and HTML document, the per-target sections, the terminal summary."""
