;; boss: a theater:simple actor that supervises children through theater:simple/supervisor.
;; State: "MANIFEST\nLOG": the first line is the child manifest path (e.g. "child.toml"), the
;; rest is a notification log, one line per supervisor callback.
;;   init           none -> err("boss needs a manifest path as its state");
;;                  else spawn(MANIFEST, none) and log "boss spawned <id>" or
;;                  "boss spawn failed: <err>"; keeps state (a failed spawn is not an init error)
;;   handle-send    keeps state
;;   handle-request (state unchanged)
;;                  "spawn"        spawn(MANIFEST, none) -> reply the id, or "err:<text>"
;;                  "list"         list-children -> reply the ids joined with "\n" ("" if none)
;;                  "stop <id>"    stop-child(id)    -> reply "ok" or "err:<text>"
;;                  "restart <id>" restart-child(id) -> reply "ok" or "err:<text>"
;;                  "state <id>"   get-child-state(id) -> reply the state bytes, "none", or "err:<text>"
;;                  "log"          reply LOG (everything after the first "\n"; "" if there is none)
;;                  other          reply the message (echo)
;;   handle-child-error         (id, error)  appends "error <id>\n" to the state, logs "error <id>"
;;   handle-child-exit          (id, data)   appends "exit <id>\n", logs "exit <id>"
;;   handle-child-external-stop (id)         appends "external-stop <id>\n", logs "external-stop <id>"
;;   (a state without "\n" gets one after the manifest first; a none state counts as "")
;; Ids and the manifest line are passed to the host as strings: they must be UTF-8.
;;
;; Memory: bump allocator reset by every export's post-return (see echo.wat).
;; Layout: 0..1023 static strings, 1024.. export return area, 1088.. import return area, 8192.. heap.
(component
  (import "theater:simple/runtime" (instance $rt
    (export "log" (func (param "msg" string)))))
  (import "theater:simple/supervisor" (instance $sup
    (export "spawn" (func (param "manifest" string) (param "init-bytes" (option (list u8)))
      (result (result string (error string)))))
    (export "list-children" (func (result (list string))))
    (export "stop-child" (func (param "child-id" string) (result (result (error string)))))
    (export "restart-child" (func (param "child-id" string) (result (result (error string)))))
    (export "get-child-state" (func (param "child-id" string)
      (result (result (option (list u8)) (error string)))))))

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
  (core func $spawn (canon lower (func $sup "spawn") (memory $memory) (realloc (core func $mem "realloc"))))
  (core func $list-children (canon lower (func $sup "list-children") (memory $memory)
    (realloc (core func $mem "realloc"))))
  (core func $stop-child (canon lower (func $sup "stop-child") (memory $memory)
    (realloc (core func $mem "realloc"))))
  (core func $restart-child (canon lower (func $sup "restart-child") (memory $memory)
    (realloc (core func $mem "realloc"))))
  (core func $get-child-state (canon lower (func $sup "get-child-state") (memory $memory)
    (realloc (core func $mem "realloc"))))

  (core module $actor
    (import "mem" "memory" (memory 1))
    (import "mem" "realloc" (func $alloc (param i32 i32 i32 i32) (result i32)))
    (import "rt" "log" (func $log (param i32 i32)))
    ;; spawn(manifest ptr, len, init disc, ptr, len, return-area)
    ;;   return area: result<string, string>: disc u8 @0, ptr @4, len @8
    (import "sup" "spawn" (func $spawn (param i32 i32 i32 i32 i32 i32)))
    ;; list-children(return-area): list<string>: ptr @0, count @4; elements are (ptr, len) pairs
    (import "sup" "list-children" (func $list-children (param i32)))
    ;; stop-child / restart-child(id ptr, len, return-area): result<_, string>: disc @0, ptr @4, len @8
    (import "sup" "stop-child" (func $stop-child (param i32 i32 i32)))
    (import "sup" "restart-child" (func $restart-child (param i32 i32 i32)))
    ;; get-child-state(id ptr, len, return-area): result<option<list<u8>>, string>:
    ;;   disc @0; ok: option disc @4, ptr @8, len @12; err: ptr @4, len @8
    (import "sup" "get-child-state" (func $get-child-state (param i32 i32 i32)))
    (data (i32.const 64) "boss needs a manifest path as its state")   ;; 39
    (data (i32.const 128) "boss spawned ")                           ;; 13
    (data (i32.const 160) "boss spawn failed: ")                     ;; 19
    (data (i32.const 192) "spawn")                                   ;; 5
    (data (i32.const 200) "list")                                    ;; 4
    (data (i32.const 208) "stop ")                                   ;; 5
    (data (i32.const 216) "restart ")                                ;; 8
    (data (i32.const 232) "state ")                                  ;; 6
    (data (i32.const 240) "log")                                     ;; 3
    (data (i32.const 248) "err:")                                    ;; 4
    (data (i32.const 256) "ok")                                      ;; 2
    (data (i32.const 264) "none")                                    ;; 4
    (data (i32.const 272) "error ")                                  ;; 6
    (data (i32.const 288) "exit ")                                   ;; 5
    (data (i32.const 296) "external-stop ")                          ;; 14
    (global $ret i32 (i32.const 1024))
    (global $iret i32 (i32.const 1088))
    ;; set by $split: length of the first line, and whether a "\n" ends it
    (global $fl (mut i32) (i32.const 0))
    (global $has-nl (mut i32) (i32.const 0))
    ;; set by $cat and $join: length of the bytes they built
    (global $len (mut i32) (i32.const 0))

    (func $ok (param $d i32) (param $p i32) (param $l i32) (result i32)
      (i32.store8 (global.get $ret) (i32.const 0))
      (i32.store8 offset=4 (global.get $ret) (local.get $d))
      (i32.store offset=8 (global.get $ret) (local.get $p))
      (i32.store offset=12 (global.get $ret) (local.get $l))
      (global.get $ret))

    (func $ok-reply (param $d i32) (param $p i32) (param $l i32) (param $rp i32) (param $rl i32) (result i32)
      (drop (call $ok (local.get $d) (local.get $p) (local.get $l)))
      (i32.store8 offset=16 (global.get $ret) (i32.const 1))
      (i32.store offset=20 (global.get $ret) (local.get $rp))
      (i32.store offset=24 (global.get $ret) (local.get $rl))
      (global.get $ret))

    (func $err (param $p i32) (param $l i32) (result i32)
      (i32.store8 (global.get $ret) (i32.const 1))
      (i32.store offset=4 (global.get $ret) (local.get $p))
      (i32.store offset=8 (global.get $ret) (local.get $l))
      (global.get $ret))

    ;; byte-equality of [p, p+l) and [q, q+m)
    (func $eq (param $p i32) (param $l i32) (param $q i32) (param $m i32) (result i32)
      (if (i32.ne (local.get $l) (local.get $m)) (then (return (i32.const 0))))
      (call $starts (local.get $p) (local.get $l) (local.get $q) (local.get $m)))

    ;; does [p, p+l) start with [q, q+m)?
    (func $starts (param $p i32) (param $l i32) (param $q i32) (param $m i32) (result i32)
      (local $i i32)
      (if (i32.lt_u (local.get $l) (local.get $m)) (then (return (i32.const 0))))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get $m)))
          (if (i32.ne (i32.load8_u (i32.add (local.get $p) (local.get $i)))
                      (i32.load8_u (i32.add (local.get $q) (local.get $i))))
            (then (return (i32.const 0))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
      (i32.const 1))

    ;; the state's first line: sets $fl (its length) and $has-nl; a none state is ""
    (func $split (param $d i32) (param $p i32) (param $l i32)
      (local $i i32)
      (global.set $has-nl (i32.const 0))
      (if (i32.eqz (local.get $d)) (then (local.set $l (i32.const 0))))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get $l)))
          (if (i32.eq (i32.load8_u (i32.add (local.get $p) (local.get $i))) (i32.const 10))
            (then (global.set $has-nl (i32.const 1)) (br $done)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
      (global.set $fl (local.get $i)))

    ;; a ++ b in fresh heap memory; length in $len
    (func $cat (param $ap i32) (param $al i32) (param $bp i32) (param $bl i32) (result i32)
      (local $buf i32)
      (global.set $len (i32.add (local.get $al) (local.get $bl)))
      (local.set $buf (call $alloc (i32.const 0) (i32.const 0) (i32.const 1) (global.get $len)))
      (memory.copy (local.get $buf) (local.get $ap) (local.get $al))
      (memory.copy (i32.add (local.get $buf) (local.get $al)) (local.get $bp) (local.get $bl))
      (local.get $buf))

    (func $log2 (param $ap i32) (param $al i32) (param $bp i32) (param $bl i32)
      (local $buf i32)
      (local.set $buf (call $cat (local.get $ap) (local.get $al) (local.get $bp) (local.get $bl)))
      (call $log (local.get $buf) (global.get $len)))

    ;; the list<string> at $iret joined with "\n"; length in $len
    (func $join (result i32)
      (local $arr i32) (local $n i32) (local $i i32) (local $e i32) (local $total i32)
      (local $buf i32) (local $at i32)
      (local.set $arr (i32.load (global.get $iret)))
      (local.set $n (i32.load offset=4 (global.get $iret)))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (local.set $e (i32.add (local.get $arr) (i32.shl (local.get $i) (i32.const 3))))
          (local.set $total (i32.add (local.get $total) (i32.load offset=4 (local.get $e))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
      (if (local.get $n)
        (then (local.set $total (i32.add (local.get $total) (i32.sub (local.get $n) (i32.const 1))))))
      (local.set $buf (call $alloc (i32.const 0) (i32.const 0) (i32.const 1) (local.get $total)))
      (local.set $at (local.get $buf))
      (local.set $i (i32.const 0))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (if (local.get $i)
            (then
              (i32.store8 (local.get $at) (i32.const 10))
              (local.set $at (i32.add (local.get $at) (i32.const 1)))))
          (local.set $e (i32.add (local.get $arr) (i32.shl (local.get $i) (i32.const 3))))
          (memory.copy (local.get $at) (i32.load (local.get $e)) (i32.load offset=4 (local.get $e)))
          (local.set $at (i32.add (local.get $at) (i32.load offset=4 (local.get $e))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
      (global.set $len (local.get $total))
      (local.get $buf))

    ;; ok(state) replying "err:" ++ the string at $iret+4/+8
    (func $reply-err (param $d i32) (param $p i32) (param $l i32) (result i32)
      (local $buf i32)
      (local.set $buf (call $cat (i32.const 248) (i32.const 4)
                        (i32.load offset=4 (global.get $iret)) (i32.load offset=8 (global.get $iret))))
      (call $ok-reply (local.get $d) (local.get $p) (local.get $l) (local.get $buf) (global.get $len)))

    ;; ok(state) replying "ok" or "err:<text>" for the result<_, string> at $iret
    (func $reply-unit (param $d i32) (param $p i32) (param $l i32) (result i32)
      (if (i32.load8_u (global.get $iret))
        (then (return (call $reply-err (local.get $d) (local.get $p) (local.get $l)))))
      (call $ok-reply (local.get $d) (local.get $p) (local.get $l) (i32.const 256) (i32.const 2)))

    ;; ok(state ++ ["\n"] ++ prefix ++ id ++ "\n"), logging prefix ++ id
    (func $note (param $d i32) (param $p i32) (param $l i32)
          (param $pre i32) (param $prel i32) (param $idp i32) (param $idl i32) (result i32)
      (local $nl i32) (local $total i32) (local $buf i32) (local $at i32)
      (if (i32.eqz (local.get $d)) (then (local.set $l (i32.const 0))))
      (call $split (local.get $d) (local.get $p) (local.get $l))
      (local.set $nl (i32.eqz (global.get $has-nl)))
      (local.set $total (i32.add (i32.add (local.get $l) (local.get $nl))
                          (i32.add (i32.add (local.get $prel) (local.get $idl)) (i32.const 1))))
      (local.set $buf (call $alloc (i32.const 0) (i32.const 0) (i32.const 1) (local.get $total)))
      (memory.copy (local.get $buf) (local.get $p) (local.get $l))
      (local.set $at (i32.add (local.get $buf) (local.get $l)))
      (if (local.get $nl)
        (then
          (i32.store8 (local.get $at) (i32.const 10))
          (local.set $at (i32.add (local.get $at) (i32.const 1)))))
      (memory.copy (local.get $at) (local.get $pre) (local.get $prel))
      (memory.copy (i32.add (local.get $at) (local.get $prel)) (local.get $idp) (local.get $idl))
      (i32.store8 (i32.sub (i32.add (local.get $buf) (local.get $total)) (i32.const 1)) (i32.const 10))
      ;; the line just written, without its "\n"
      (call $log (local.get $at) (i32.add (local.get $prel) (local.get $idl)))
      (call $ok (i32.const 1) (local.get $buf) (local.get $total)))

    (func (export "init") (param $d i32) (param $p i32) (param $l i32) (result i32)
      (if (i32.eqz (local.get $d)) (then (return (call $err (i32.const 64) (i32.const 39)))))
      (call $split (local.get $d) (local.get $p) (local.get $l))
      (call $spawn (local.get $p) (global.get $fl) (i32.const 0) (i32.const 0) (i32.const 0) (global.get $iret))
      (if (i32.load8_u (global.get $iret))
        (then (call $log2 (i32.const 160) (i32.const 19)
                (i32.load offset=4 (global.get $iret)) (i32.load offset=8 (global.get $iret))))
        (else (call $log2 (i32.const 128) (i32.const 13)
                (i32.load offset=4 (global.get $iret)) (i32.load offset=8 (global.get $iret)))))
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-send") (param $d i32) (param $p i32) (param $l i32)
          (param $mp i32) (param $ml i32) (result i32)
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-request") (param $d i32) (param $p i32) (param $l i32)
          (param $idp i32) (param $idl i32) (param $mp i32) (param $ml i32) (result i32)
      (local $buf i32)
      (call $split (local.get $d) (local.get $p) (local.get $l))
      ;; "spawn"
      (if (call $eq (local.get $mp) (local.get $ml) (i32.const 192) (i32.const 5))
        (then
          (call $spawn (local.get $p) (global.get $fl) (i32.const 0) (i32.const 0) (i32.const 0)
                       (global.get $iret))
          (if (i32.load8_u (global.get $iret))
            (then (return (call $reply-err (local.get $d) (local.get $p) (local.get $l)))))
          (return (call $ok-reply (local.get $d) (local.get $p) (local.get $l)
                    (i32.load offset=4 (global.get $iret)) (i32.load offset=8 (global.get $iret))))))
      ;; "list"
      (if (call $eq (local.get $mp) (local.get $ml) (i32.const 200) (i32.const 4))
        (then
          (call $list-children (global.get $iret))
          (local.set $buf (call $join))
          (return (call $ok-reply (local.get $d) (local.get $p) (local.get $l)
                    (local.get $buf) (global.get $len)))))
      ;; "stop <id>"
      (if (call $starts (local.get $mp) (local.get $ml) (i32.const 208) (i32.const 5))
        (then
          (call $stop-child (i32.add (local.get $mp) (i32.const 5)) (i32.sub (local.get $ml) (i32.const 5))
                            (global.get $iret))
          (return (call $reply-unit (local.get $d) (local.get $p) (local.get $l)))))
      ;; "restart <id>"
      (if (call $starts (local.get $mp) (local.get $ml) (i32.const 216) (i32.const 8))
        (then
          (call $restart-child (i32.add (local.get $mp) (i32.const 8)) (i32.sub (local.get $ml) (i32.const 8))
                               (global.get $iret))
          (return (call $reply-unit (local.get $d) (local.get $p) (local.get $l)))))
      ;; "state <id>"
      (if (call $starts (local.get $mp) (local.get $ml) (i32.const 232) (i32.const 6))
        (then
          (call $get-child-state (i32.add (local.get $mp) (i32.const 6)) (i32.sub (local.get $ml) (i32.const 6))
                                 (global.get $iret))
          (if (i32.load8_u (global.get $iret))
            (then (return (call $reply-err (local.get $d) (local.get $p) (local.get $l)))))
          (if (i32.load8_u offset=4 (global.get $iret))
            (then (return (call $ok-reply (local.get $d) (local.get $p) (local.get $l)
                            (i32.load offset=8 (global.get $iret)) (i32.load offset=12 (global.get $iret))))))
          (return (call $ok-reply (local.get $d) (local.get $p) (local.get $l) (i32.const 264) (i32.const 4)))))
      ;; "log"
      (if (call $eq (local.get $mp) (local.get $ml) (i32.const 240) (i32.const 3))
        (then
          (if (global.get $has-nl)
            (then (return (call $ok-reply (local.get $d) (local.get $p) (local.get $l)
                            (i32.add (local.get $p) (i32.add (global.get $fl) (i32.const 1)))
                            (i32.sub (local.get $l) (i32.add (global.get $fl) (i32.const 1)))))))
          (return (call $ok-reply (local.get $d) (local.get $p) (local.get $l) (i32.const 0) (i32.const 0)))))
      ;; anything else: echo
      (call $ok-reply (local.get $d) (local.get $p) (local.get $l) (local.get $mp) (local.get $ml)))

    ;; (state, child id, error-type enum, data option disc, ptr, len): the error itself is not kept
    (func (export "handle-child-error") (param $d i32) (param $p i32) (param $l i32)
          (param $idp i32) (param $idl i32) (param $et i32) (param $dd i32) (param $dp i32) (param $dl i32)
          (result i32)
      (call $note (local.get $d) (local.get $p) (local.get $l) (i32.const 272) (i32.const 6)
                  (local.get $idp) (local.get $idl)))

    ;; (state, child id, final data option disc, ptr, len)
    (func (export "handle-child-exit") (param $d i32) (param $p i32) (param $l i32)
          (param $idp i32) (param $idl i32) (param $dd i32) (param $dp i32) (param $dl i32) (result i32)
      (call $note (local.get $d) (local.get $p) (local.get $l) (i32.const 288) (i32.const 5)
                  (local.get $idp) (local.get $idl)))

    ;; (state, child id)
    (func (export "handle-child-external-stop") (param $d i32) (param $p i32) (param $l i32)
          (param $idp i32) (param $idl i32) (result i32)
      (call $note (local.get $d) (local.get $p) (local.get $l) (i32.const 296) (i32.const 14)
                  (local.get $idp) (local.get $idl))))
  (core instance $a (instantiate $actor
    (with "mem" (instance $mem))
    (with "rt" (instance (export "log" (func $log))))
    (with "sup" (instance
      (export "spawn" (func $spawn))
      (export "list-children" (func $list-children))
      (export "stop-child" (func $stop-child))
      (export "restart-child" (func $restart-child))
      (export "get-child-state" (func $get-child-state))))))

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

  ;; theater:simple/types, as used by supervisor-handlers (same names and case order)
  (type $wit-error-type (enum "operation-timeout" "channel-closed" "shutting-down" "function-not-found"
    "type-mismatch" "internal" "serialization-error" "update-component-error" "paused"))
  (type $wit-actor-error (record
    (field "error-type" $wit-error-type)
    (field "data" (option (list u8)))))

  (func $handle-child-error (param "state" (option (list u8))) (param "params" (tuple string $wit-actor-error))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "handle-child-error") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))
  (func $handle-child-exit (param "state" (option (list u8))) (param "params" (tuple string (option (list u8))))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "handle-child-exit") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))
  (func $handle-child-external-stop (param "state" (option (list u8))) (param "params" (tuple string))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "handle-child-external-stop") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))

  (instance $actor-exports (export "init" (func $init)))
  (instance $msc-exports
    (export "handle-send" (func $handle-send))
    (export "handle-request" (func $handle-request)))
  (instance $handler-exports
    (export "wit-error-type" (type $wit-error-type))
    (export "wit-actor-error" (type $wit-actor-error))
    (export "handle-child-error" (func $handle-child-error))
    (export "handle-child-exit" (func $handle-child-exit))
    (export "handle-child-external-stop" (func $handle-child-external-stop)))
  (export "theater:simple/actor" (instance $actor-exports))
  (export "theater:simple/message-server-client" (instance $msc-exports))
  (export "theater:simple/supervisor-handlers" (instance $handler-exports))
)
