// Compiled into a folder library only while that folder has no .cpp of its own (keeps CMake valid).
