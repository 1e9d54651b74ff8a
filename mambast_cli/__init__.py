"""mambast: fast arbitrary style transfer with Mamba-ST (Botti et al., WACV 2025)."""
__version__ = "0.1.0"
