"""onedge's ground floor: the pieces every package shares (errors, Registry, files, StrictModel).

Nothing here imports training/, export/, targets/ or pipeline/; they all import from here.
"""
