"""The dataset spec, the one description of a table: its label, its sensitive columns, every
other column's kind and domain. Reading a table by its spec, drafting a spec from a table
(infer), checking a table against one (check), and the Adult census spec the project ships.

It imports nothing of the project but errors and fileio: everyone else reads it.
"""
