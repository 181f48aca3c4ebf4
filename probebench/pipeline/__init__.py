"""The run: encoder x task, from a `RunConfig` to records. `config` (the settings, validated once), `plan`
(which features and records), `runner` (the steps in order), `record` (what a record holds)."""
