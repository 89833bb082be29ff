"""H3 hex products: exact cell fill (`fill`), chunk planning (`plan`), chunk runs (`chunk`) and h0 consolidation
(`consolidate`). Cell ids are uint64 throughout."""
