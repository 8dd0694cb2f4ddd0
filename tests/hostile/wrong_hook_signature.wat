;; expect: load_error
;; message: cannot load policy `wrong-hook-signature@1`: export `rulehost_authorize` has type `(i32) -> i32`, expected `(i32, i32) -> i64`
;; Exports its hook with a signature ABI v1 does not have.
(module
  (memory (export "memory") 1)
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "rulehost_authorize") (param i32) (result i32) i32.const 0))
