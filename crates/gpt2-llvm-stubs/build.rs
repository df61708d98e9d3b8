fn main() {
    println!("cargo::rerun-if-changed=stubs/llvm_stubs.c");
    cc::Build::new()
        .file("stubs/llvm_stubs.c")
        .link_lib_modifier("+whole-archive")
        .compile("gpt2_llvm_stubs");
}
