;; expect: load_error
;; message: cannot load policy `unknown-host-import@1`: imports `rulehost`.`exec`, but a policy may import only `rulehost`.`log`
;; Imports a host function that does not exist.
(module
  (import "rulehost" "exec" (func (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "rulehost_authorize") (param i32 i32) (result i64) i64.const 0))
