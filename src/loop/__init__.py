"""The loop's data: the prediction log's tables (the one owner of the database schema), the writer
process that fills them, labels that come later, the hourly monitoring windows, and the replay.

May import the schema, the drift core and the data loader. Must never import the service (the
windows run as batch jobs, away from any web process) nor training code.
"""
