//! HTTP push client: sends push batches to edge nodes.
