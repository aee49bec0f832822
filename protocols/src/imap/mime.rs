//! ENVELOPE, BODYSTRUCTURE and BODY[section] of a stored message (to be written).
