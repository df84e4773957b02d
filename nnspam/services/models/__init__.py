"""Where served models come from: one host's model files (the registry) or a Redis
fleet (store, fleet, fleet_admin), and the settings that say which (serve_settings).
Imports nothing, so importing one module loads no other."""
