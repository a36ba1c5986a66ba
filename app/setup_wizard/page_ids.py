"""Page ids of the setup wizard (QWizard.setPage ids; every page's nextId() returns one)."""

PAGE_CHOICE, PAGE_LICENCE, PAGE_CHECK, PAGE_DOWNLOAD, PAGE_EXISTING, PAGE_DONE = range(6)
