"""Vetted plans (recipes) shipped with Tandem, one YAML file each; see ``tandem.actors._recipes``."""
