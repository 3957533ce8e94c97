;; noinit: a valid component that exports only message-server-client.handle-send and no
;; theater:simple/actor interface, so it has no init. The host must refuse to start it
;; (the "component without actor.init" bad-input case). Its handle-send keeps the state.
(component
  (core module $m
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 4096))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and
        (i32.add (global.get $next) (i32.sub (local.get 2) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get 2))))
      (global.set $next (i32.add (local.get $p) (local.get 3)))
      (local.get $p))
    (func (export "reset") (param i32)
      (global.set $next (i32.const 4096)))
    (func (export "handle-send") (param $d i32) (param $p i32) (param $l i32)
          (param $mp i32) (param $ml i32) (result i32)
      (i32.store8 (i32.const 1024) (i32.const 0))
      (i32.store8 (i32.const 1028) (local.get $d))
      (i32.store (i32.const 1032) (local.get $p))
      (i32.store (i32.const 1036) (local.get $l))
      (i32.const 1024)))
  (core instance $i (instantiate $m))
  (alias core export $i "memory" (core memory $memory))
  (func $send (param "state" (option (list u8))) (param "params" (tuple (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $i "handle-send") (memory $memory) (realloc (core func $i "realloc"))
      (post-return (core func $i "reset"))))
  (instance $msc-exports (export "handle-send" (func $send)))
  (export "theater:simple/message-server-client" (instance $msc-exports))
)
