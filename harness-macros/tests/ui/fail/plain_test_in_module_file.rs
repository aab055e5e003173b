// A plain test in a file that `mod name;` loads would never run under harness::main!(): it is
// refused with that file's name and line.
mod suite_helpers;

harness::main!();
