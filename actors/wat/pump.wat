;; pump: drives continuous traffic in the demo tree.
;; State: the two lines "SELF\nTARGET": SELF is the address the pump sends its ticks to
;; (its own), TARGET the actor it pokes.
;;   init           logs "pump started", sends "tick" to SELF (errors logged, ignored), keeps state;
;;                  none or a state without a newline -> err
;;   handle-send    (any message) sleep(250); request(TARGET, "inc") and log the reply or the error;
;;                  send(SELF, "tick"); keeps state
;;   handle-request replies "pump", keeps state
;;
;; Memory: bump allocator reset by every export's post-return (see echo.wat).
;; Layout: 0..1023 static strings, 1024.. export return area, 1088.. import return area, 8192.. heap.
(component
  (import "theater:simple/runtime" (instance $rt
    (export "log" (func (param "msg" string)))))
  (import "theater:simple/message-server-host" (instance $msh
    (export "send" (func (param "actor-id" string) (param "msg" (list u8))
      (result (result (error string)))))
    (export "request" (func (param "actor-id" string) (param "msg" (list u8))
      (result (result (list u8) (error string)))))))
  (import "theater:simple/timing" (instance $tm
    (export "sleep" (func (param "duration-ms" u64) (result (result (error string)))))))

  (core module $mem
    (memory (export "memory") 2)
    (global $heap-base i32 (i32.const 8192))
    (global $next (mut i32) (i32.const 8192))
    (func (export "realloc") (param $old i32) (param $old-size i32) (param $align i32) (param $size i32) (result i32)
      (local $p i32) (local $end i32) (local $have i32)
      (local.set $p (i32.and
        (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $p) (local.get $size)))
      (local.set $have (i32.shl (memory.size) (i32.const 16)))
      (if (i32.gt_u (local.get $end) (local.get $have))
        (then
          (if (i32.eq
                (memory.grow (i32.shr_u
                  (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535))
                  (i32.const 16)))
                (i32.const -1))
            (then unreachable))))
      (global.set $next (local.get $end))
      (if (local.get $old-size)
        (then (memory.copy (local.get $p) (local.get $old)
          (select (local.get $old-size) (local.get $size)
            (i32.lt_u (local.get $old-size) (local.get $size))))))
      (local.get $p))
    (func (export "reset") (param i32)
      (global.set $next (global.get $heap-base))))
  (core instance $mem (instantiate $mem))
  (alias core export $mem "memory" (core memory $memory))

  (core func $log (canon lower (func $rt "log") (memory $memory)))
  (core func $send (canon lower (func $msh "send") (memory $memory) (realloc (core func $mem "realloc"))))
  (core func $request (canon lower (func $msh "request") (memory $memory) (realloc (core func $mem "realloc"))))
  (core func $sleep (canon lower (func $tm "sleep") (memory $memory) (realloc (core func $mem "realloc"))))

  (core module $actor
    (import "mem" "memory" (memory 1))
    (import "mem" "realloc" (func $alloc (param i32 i32 i32 i32) (result i32)))
    (import "rt" "log" (func $log (param i32 i32)))
    ;; send/request(id ptr, id len, msg ptr, msg len, return-area)
    (import "msh" "send" (func $send (param i32 i32 i32 i32 i32)))
    (import "msh" "request" (func $request (param i32 i32 i32 i32 i32)))
    ;; sleep(duration-ms, return-area)
    (import "tm" "sleep" (func $sleep (param i64 i32)))
    (data (i32.const 64) "pump started")                                     ;; 12
    (data (i32.const 80) "tick")                                             ;; 4
    (data (i32.const 88) "inc")                                              ;; 3
    (data (i32.const 92) "pump")                                             ;; 4
    (data (i32.const 96) "pump: send failed: ")                              ;; 19
    (data (i32.const 128) "pump: request failed: ")                          ;; 22
    (data (i32.const 160) "pump: target says ")                              ;; 18
    (data (i32.const 192) "pump: sleep failed: ")                            ;; 20
    (data (i32.const 224) "init refused: pump state must be \"SELF\\nTARGET\"") ;; 47
    (data (i32.const 288) "pump: state must be \"SELF\\nTARGET\"")             ;; 34
    (global $ret i32 (i32.const 1024))
    (global $iret i32 (i32.const 1088))
    ;; the two halves of the state, set by $parse
    (global $self-p (mut i32) (i32.const 0))
    (global $self-l (mut i32) (i32.const 0))
    (global $tgt-p (mut i32) (i32.const 0))
    (global $tgt-l (mut i32) (i32.const 0))

    (func $ok (param $d i32) (param $p i32) (param $l i32) (result i32)
      (i32.store8 (global.get $ret) (i32.const 0))
      (i32.store8 offset=4 (global.get $ret) (local.get $d))
      (i32.store offset=8 (global.get $ret) (local.get $p))
      (i32.store offset=12 (global.get $ret) (local.get $l))
      (global.get $ret))

    (func $err (param $p i32) (param $l i32) (result i32)
      (i32.store8 (global.get $ret) (i32.const 1))
      (i32.store offset=4 (global.get $ret) (local.get $p))
      (i32.store offset=8 (global.get $ret) (local.get $l))
      (global.get $ret))

    (func $log2 (param $pp i32) (param $pl i32) (param $tp i32) (param $tl i32)
      (local $buf i32)
      (local.set $buf (call $alloc (i32.const 0) (i32.const 0) (i32.const 1)
                        (i32.add (local.get $pl) (local.get $tl))))
      (memory.copy (local.get $buf) (local.get $pp) (local.get $pl))
      (memory.copy (i32.add (local.get $buf) (local.get $pl)) (local.get $tp) (local.get $tl))
      (call $log (local.get $buf) (i32.add (local.get $pl) (local.get $tl))))

    ;; log prefix ++ the error text of a result<_, string> / result<list<u8>, string> at $iret
    (func $log-err (param $pp i32) (param $pl i32)
      (call $log2 (local.get $pp) (local.get $pl)
        (i32.load offset=4 (global.get $iret)) (i32.load offset=8 (global.get $iret))))

    ;; split "SELF\nTARGET" at the first newline; 0 when the state has no newline
    (func $parse (param $d i32) (param $p i32) (param $l i32) (result i32)
      (local $i i32)
      (if (i32.eqz (local.get $d)) (then (return (i32.const 0))))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get $l)))
          (if (i32.eq (i32.load8_u (i32.add (local.get $p) (local.get $i))) (i32.const 10))
            (then
              (global.set $self-p (local.get $p))
              (global.set $self-l (local.get $i))
              (global.set $tgt-p (i32.add (local.get $p) (i32.add (local.get $i) (i32.const 1))))
              (global.set $tgt-l (i32.sub (local.get $l) (i32.add (local.get $i) (i32.const 1))))
              (return (i32.const 1))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
      (i32.const 0))

    (func $tick-self
      (call $send (global.get $self-p) (global.get $self-l) (i32.const 80) (i32.const 4) (global.get $iret))
      (if (i32.load8_u (global.get $iret))
        (then (call $log-err (i32.const 96) (i32.const 19)))))

    (func (export "init") (param $d i32) (param $p i32) (param $l i32) (result i32)
      (if (i32.eqz (call $parse (local.get $d) (local.get $p) (local.get $l)))
        (then (return (call $err (i32.const 224) (i32.const 47)))))
      (call $log (i32.const 64) (i32.const 12))
      (call $tick-self)
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-send") (param $d i32) (param $p i32) (param $l i32)
          (param $mp i32) (param $ml i32) (result i32)
      (if (i32.eqz (call $parse (local.get $d) (local.get $p) (local.get $l)))
        (then (return (call $err (i32.const 288) (i32.const 34)))))
      (call $sleep (i64.const 250) (global.get $iret))
      (if (i32.load8_u (global.get $iret))
        (then (call $log-err (i32.const 192) (i32.const 20))))
      (call $request (global.get $tgt-p) (global.get $tgt-l) (i32.const 88) (i32.const 3) (global.get $iret))
      (if (i32.load8_u (global.get $iret))
        (then (call $log-err (i32.const 128) (i32.const 22)))
        (else (call $log-err (i32.const 160) (i32.const 18))))
      (call $tick-self)
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-request") (param $d i32) (param $p i32) (param $l i32)
          (param $idp i32) (param $idl i32) (param $mp i32) (param $ml i32) (result i32)
      (drop (call $ok (local.get $d) (local.get $p) (local.get $l)))
      (i32.store8 offset=16 (global.get $ret) (i32.const 1))
      (i32.store offset=20 (global.get $ret) (i32.const 92))
      (i32.store offset=24 (global.get $ret) (i32.const 4))
      (global.get $ret)))
  (core instance $a (instantiate $actor
    (with "mem" (instance $mem))
    (with "rt" (instance (export "log" (func $log))))
    (with "msh" (instance
      (export "send" (func $send))
      (export "request" (func $request))))
    (with "tm" (instance (export "sleep" (func $sleep))))))

  (func $init (param "state" (option (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "init") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))
  (func $handle-send (param "state" (option (list u8))) (param "params" (tuple (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "handle-send") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))
  (func $handle-request (param "state" (option (list u8))) (param "params" (tuple string (list u8)))
    (result (result (tuple (option (list u8)) (tuple (option (list u8)))) (error string)))
    (canon lift (core func $a "handle-request") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))

  (instance $actor-exports (export "init" (func $init)))
  (instance $msc-exports
    (export "handle-send" (func $handle-send))
    (export "handle-request" (func $handle-request)))
  (export "theater:simple/actor" (instance $actor-exports))
  (export "theater:simple/message-server-client" (instance $msc-exports))
)
