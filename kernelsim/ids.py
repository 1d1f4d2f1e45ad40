"""Object ids and introspection: GET_NEXT_ID, GET_FD_BY_ID, OBJ_GET_INFO_BY_FD, fdinfo."""
