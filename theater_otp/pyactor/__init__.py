"""Python actors: scaffold a project (`create`), build it with componentize-py (`build`), check
manifests and trees against their components (`validate`). The actor-side helpers are in `sdk/`."""
