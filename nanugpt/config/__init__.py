"""What a run is told and what the parts promise each other: the params schema and every contract.

- ``params``: the params schema, its sections, and ``load_params`` / ``validate_params``.
- ``loader``: reading a params YAML with its directives (``__include__``, ``_copy``, ``$VAR``, overrides).
- ``components``: the base class of each kind of component (data, tokenizer, model, optimizer, ...).
- ``registry``: the short names users write in ``module:``, and the import of a user's own component.
- ``protocols``: what the train loop relies on in built components (schedule, scaler, ...).
- ``token_meta``: ``meta.json``, the contract between the tokenize stage and every reader of token files.
"""
