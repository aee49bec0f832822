//! SEARCH keys evaluated against one message (to be written).
