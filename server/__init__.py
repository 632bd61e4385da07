"""The matchreplay server: the imperative shell over replay/."""
