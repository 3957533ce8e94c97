;; httpframe: a theater:simple actor that serves HTTP through theater:simple/http-framework (it
;; creates, routes and starts its own server in init, and exports theater:simple/http-handlers), for
;; the http-framework tests.
;;   init(state): some state of at least 2 bytes holds the port to ask for (u16 little-endian at
;;     offset 0); none or shorter asks for port none. Then
;;       S  = create-server({port, host: none})
;;       H1 = register-handler("hello")        H2 = register-handler("count")
;;       add-route(S, "/hello/{name}", "GET", H1)   add-route(S, "/count", "*", H2)
;;       add-route(S, "/crash", "GET", H1)          P = start-server(S)
;;     H1 and H2 are kept in globals (a restarted actor is a new instance, which runs init again).
;;     The first host err is init's err (the same message). On success the state is 6 bytes:
;;     u32 LE count = 0, then u16 LE P.
;;   handle-request(state, (handler-id, request)):
;;     H1   a uri ending with "/crash" traps (unreachable); else 200, content-type text/plain,
;;          body "hello " ++ uri
;;     H2   200, content-type text/plain, body = the count after this request, in decimal
;;     else err("unknown handler")
;;   Every ok returns the state with count + 1 and the port kept (a state shorter than 6 bytes reads
;;   its missing count / port as 0).
;;
;; Export params: init (state d p l); handle-request (13 flat): state (d p l), handler-id i64,
;;   http-request (method ptr len, uri ptr len, headers ptr len, body d p l).
;; Export return area at 1024 (see echo.wat): +0 disc; err: +4 ptr +8 len;
;;   init ok: state option +4 disc +8 ptr +12 len;
;;   handle-request ok: state option +4 disc +8 ptr +12 len, http-response: status u16 +16,
;;   headers +20 ptr +24 len, body option +28 disc +32 ptr +36 len.
;; Import core signatures (the last i32 is where the host writes the result):
;;   create-server(port d, port u16, host d, host ptr, host len, ret)
;;   register-handler(name ptr, name len, ret)
;;   add-route(server-id i64, path ptr, path len, method ptr, method len, handler-id i64, ret)
;;   start-server(server-id i64, ret)
;; Import return area at $res = 512, +0 is the result's discriminant:
;;   result<u64,string>   ok: +8 u64 (8-aligned); err: +8 ptr, +12 len
;;   result<u16,string>   ok: +4 u16;            err: +4 ptr, +8 len
;;
;; Memory: a bump allocator (growing the memory as needed) reset by every export's post-return;
;; 0..511 static strings, 512.. host-call results, 1024.. the export's return area, 8192.. heap.
(component
  (import "theater:simple/http-types" (instance $types
    (type $request (record (field "method" string) (field "uri" string)
                           (field "headers" (list (tuple string string)))
                           (field "body" (option (list u8)))))
    (export "http-request" (type (eq $request)))
    (type $response (record (field "status" u16) (field "headers" (list (tuple string string)))
                            (field "body" (option (list u8)))))
    (export "http-response" (type (eq $response)))))
  (alias export $types "http-request" (type $http-request))
  (alias export $types "http-response" (type $http-response))

  (import "theater:simple/http-framework" (instance $fw
    (type $config (record (field "port" (option u16)) (field "host" (option string))))
    (export "server-config" (type $config-e (eq $config)))
    (export "create-server" (func (param "config" $config-e) (result (result u64 (error string)))))
    (export "register-handler" (func (param "handler-name" string) (result (result u64 (error string)))))
    (export "add-route" (func (param "server-id" u64) (param "path" string) (param "method" string)
                              (param "handler-id" u64) (result (result u64 (error string)))))
    (export "start-server" (func (param "server-id" u64) (result (result u16 (error string)))))))

  (core module $mem
    (memory (export "memory") 1)
    (global $heap-base i32 (i32.const 8192))
    (global $next (mut i32) (i32.const 8192))
    (func (export "realloc") (param $old i32) (param $old-size i32) (param $align i32) (param $size i32) (result i32)
      (local $p i32) (local $end i32) (local $have i32)
      (local.set $p (i32.and
        (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $p) (local.get $size)))
      (if (i32.lt_u (local.get $end) (local.get $p)) (then unreachable))
      (local.set $have (i32.shl (memory.size) (i32.const 16)))
      (if (i32.gt_u (local.get $end) (local.get $have))
        (then
          (if (i32.eq (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have))
                                                        (i32.const 65535))
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
  (alias core export $mem "realloc" (core func $realloc))

  (core func $create-server (canon lower (func $fw "create-server") (memory $memory) (realloc $realloc)))
  (core func $register-handler (canon lower (func $fw "register-handler") (memory $memory) (realloc $realloc)))
  (core func $add-route (canon lower (func $fw "add-route") (memory $memory) (realloc $realloc)))
  (core func $start-server (canon lower (func $fw "start-server") (memory $memory) (realloc $realloc)))

  (core module $actor
    (import "mem" "memory" (memory 1))
    (import "mem" "realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
    ;; create-server(port d, port, host d, host ptr, host len, return area)
    (import "fw" "create-server" (func $create-server (param i32 i32 i32 i32 i32 i32)))
    ;; register-handler(name ptr, name len, return area)
    (import "fw" "register-handler" (func $register-handler (param i32 i32 i32)))
    ;; add-route(server-id, path ptr, path len, method ptr, method len, handler-id, return area)
    (import "fw" "add-route" (func $add-route (param i64 i32 i32 i32 i32 i64 i32)))
    ;; start-server(server-id, return area)
    (import "fw" "start-server" (func $start-server (param i64 i32)))
    (data (i32.const 64) "hello")             ;; 5
    (data (i32.const 72) "count")             ;; 5
    (data (i32.const 80) "/hello/{name}")     ;; 13
    (data (i32.const 96) "/count")            ;; 6
    (data (i32.const 104) "/crash")           ;; 6
    (data (i32.const 112) "GET")              ;; 3
    (data (i32.const 116) "*")                ;; 1
    (data (i32.const 128) "content-type")     ;; 12
    (data (i32.const 144) "text/plain")       ;; 10
    (data (i32.const 160) "hello ")           ;; 6
    (data (i32.const 168) "unknown handler")  ;; 15
    ;; where host calls write their result
    (global $res i32 (i32.const 512))
    ;; the export's return area
    (global $ret i32 (i32.const 1024))
    ;; the handler ids init registered
    (global $h1 (mut i64) (i64.const 0))
    (global $h2 (mut i64) (i64.const 0))

    (func $alloc (param $align i32) (param $size i32) (result i32)
      (call $realloc (i32.const 0) (i32.const 0) (local.get $align) (local.get $size)))

    ;; err(string at ptr, len)
    (func $err (param $p i32) (param $l i32) (result i32)
      (i32.store8 (global.get $ret) (i32.const 1))
      (i32.store offset=4 (global.get $ret) (local.get $p))
      (i32.store offset=8 (global.get $ret) (local.get $l))
      (global.get $ret))

    ;; after a result<u64,string> call: 1 if it is err (then init's err is in place)
    (func $failed64 (result i32)
      (if (i32.eqz (i32.load8_u (global.get $res))) (then (return (i32.const 0))))
      (drop (call $err (i32.load offset=8 (global.get $res)) (i32.load offset=12 (global.get $res))))
      (i32.const 1))

    ;; the u64 of an ok result<u64,string>
    (func $id (result i64)
      (i64.load offset=8 (global.get $res)))

    ;; (ptr, len) ends with the `m` bytes at q
    (func $ends-with (param $p i32) (param $l i32) (param $q i32) (param $m i32) (result i32)
      (local $i i32) (local $s i32)
      (if (i32.lt_u (local.get $l) (local.get $m)) (then (return (i32.const 0))))
      (local.set $s (i32.add (local.get $p) (i32.sub (local.get $l) (local.get $m))))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get $m)))
          (if (i32.ne (i32.load8_u (i32.add (local.get $s) (local.get $i)))
                      (i32.load8_u (i32.add (local.get $q) (local.get $i))))
            (then (return (i32.const 0))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
      (i32.const 1))

    ;; decimal digits of n at dst; returns the end
    (func $decimal (param $dst i32) (param $n i32) (result i32)
      (local $tmp i32) (local $len i32) (local $i i32)
      (local.set $tmp (local.get $n))
      (loop $count
        (local.set $len (i32.add (local.get $len) (i32.const 1)))
        (local.set $tmp (i32.div_u (local.get $tmp) (i32.const 10)))
        (br_if $count (local.get $tmp)))
      (local.set $i (local.get $len))
      (loop $digits
        (local.set $i (i32.sub (local.get $i) (i32.const 1)))
        (i32.store8 (i32.add (local.get $dst) (local.get $i))
                    (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
        (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
        (br_if $digits (local.get $i)))
      (i32.add (local.get $dst) (local.get $len)))

    (func (export "init") (param $d i32) (param $p i32) (param $l i32) (result i32)
      (local $pd i32) (local $port i32) (local $sid i64) (local $state i32)
      ;; the port to ask for
      (if (i32.and (i32.ne (local.get $d) (i32.const 0)) (i32.ge_u (local.get $l) (i32.const 2)))
        (then
          (local.set $pd (i32.const 1))
          (local.set $port (i32.load16_u (local.get $p)))))
      (call $create-server (local.get $pd) (local.get $port) (i32.const 0) (i32.const 0) (i32.const 0)
                           (global.get $res))
      (if (call $failed64) (then (return (global.get $ret))))
      (local.set $sid (call $id))
      (call $register-handler (i32.const 64) (i32.const 5) (global.get $res))
      (if (call $failed64) (then (return (global.get $ret))))
      (global.set $h1 (call $id))
      (call $register-handler (i32.const 72) (i32.const 5) (global.get $res))
      (if (call $failed64) (then (return (global.get $ret))))
      (global.set $h2 (call $id))
      (call $add-route (local.get $sid) (i32.const 80) (i32.const 13) (i32.const 112) (i32.const 3)
                       (global.get $h1) (global.get $res))
      (if (call $failed64) (then (return (global.get $ret))))
      (call $add-route (local.get $sid) (i32.const 96) (i32.const 6) (i32.const 116) (i32.const 1)
                       (global.get $h2) (global.get $res))
      (if (call $failed64) (then (return (global.get $ret))))
      (call $add-route (local.get $sid) (i32.const 104) (i32.const 6) (i32.const 112) (i32.const 3)
                       (global.get $h1) (global.get $res))
      (if (call $failed64) (then (return (global.get $ret))))
      ;; start-server: result<u16,string>, payload at +4
      (call $start-server (local.get $sid) (global.get $res))
      (if (i32.load8_u (global.get $res))
        (then (return (call $err (i32.load offset=4 (global.get $res)) (i32.load offset=8 (global.get $res))))))
      ;; state: u32 count 0, u16 port
      (local.set $state (call $alloc (i32.const 1) (i32.const 6)))
      (i32.store (local.get $state) (i32.const 0))
      (i32.store16 offset=4 (local.get $state) (i32.load16_u offset=4 (global.get $res)))
      (i32.store8 (global.get $ret) (i32.const 0))
      (i32.store8 offset=4 (global.get $ret) (i32.const 1))
      (i32.store offset=8 (global.get $ret) (local.get $state))
      (i32.store offset=12 (global.get $ret) (i32.const 6))
      (global.get $ret))

    (func (export "handle-request")
          (param $d i32) (param $p i32) (param $l i32) (param $hid i64)
          (param $mp i32) (param $ml i32) (param $up i32) (param $ul i32)
          (param $hp i32) (param $hl i32) (param $bd i32) (param $bp i32) (param $bl i32) (result i32)
      (local $count i32) (local $port i32) (local $state i32) (local $hdr i32) (local $body i32)
      (local $end i32)
      (if (i64.eq (local.get $hid) (global.get $h1))
        (then
          (if (call $ends-with (local.get $up) (local.get $ul) (i32.const 104) (i32.const 6))
            (then unreachable))))
      (if (i32.and (i64.ne (local.get $hid) (global.get $h1)) (i64.ne (local.get $hid) (global.get $h2)))
        (then (return (call $err (i32.const 168) (i32.const 15)))))
      ;; state' = (count + 1, port)
      (if (local.get $d)
        (then
          (if (i32.ge_u (local.get $l) (i32.const 4)) (then (local.set $count (i32.load (local.get $p)))))
          (if (i32.ge_u (local.get $l) (i32.const 6)) (then (local.set $port (i32.load16_u offset=4 (local.get $p)))))))
      (local.set $count (i32.add (local.get $count) (i32.const 1)))
      (local.set $state (call $alloc (i32.const 1) (i32.const 6)))
      (i32.store (local.get $state) (local.get $count))
      (i32.store16 offset=4 (local.get $state) (local.get $port))
      ;; one header: ("content-type", "text/plain")
      (local.set $hdr (call $alloc (i32.const 4) (i32.const 16)))
      (i32.store (local.get $hdr) (i32.const 128))
      (i32.store offset=4 (local.get $hdr) (i32.const 12))
      (i32.store offset=8 (local.get $hdr) (i32.const 144))
      (i32.store offset=12 (local.get $hdr) (i32.const 10))
      ;; the body
      (if (i64.eq (local.get $hid) (global.get $h1))
        (then
          (local.set $body (call $alloc (i32.const 1) (i32.add (local.get $ul) (i32.const 6))))
          (memory.copy (local.get $body) (i32.const 160) (i32.const 6))
          (memory.copy (i32.add (local.get $body) (i32.const 6)) (local.get $up) (local.get $ul))
          (local.set $end (i32.add (local.get $body) (i32.add (local.get $ul) (i32.const 6)))))
        (else
          (local.set $body (call $alloc (i32.const 1) (i32.const 10)))
          (local.set $end (call $decimal (local.get $body) (local.get $count)))))
      (i32.store8 (global.get $ret) (i32.const 0))
      (i32.store8 offset=4 (global.get $ret) (i32.const 1))
      (i32.store offset=8 (global.get $ret) (local.get $state))
      (i32.store offset=12 (global.get $ret) (i32.const 6))
      (i32.store16 offset=16 (global.get $ret) (i32.const 200))
      (i32.store offset=20 (global.get $ret) (local.get $hdr))
      (i32.store offset=24 (global.get $ret) (i32.const 1))
      (i32.store8 offset=28 (global.get $ret) (i32.const 1))
      (i32.store offset=32 (global.get $ret) (local.get $body))
      (i32.store offset=36 (global.get $ret) (i32.sub (local.get $end) (local.get $body)))
      (global.get $ret)))

  (core instance $a (instantiate $actor
    (with "mem" (instance $mem))
    (with "fw" (instance
      (export "create-server" (func $create-server))
      (export "register-handler" (func $register-handler))
      (export "add-route" (func $add-route))
      (export "start-server" (func $start-server))))))

  (func $init (param "state" (option (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "init") (memory $memory) (realloc $realloc)
      (post-return (core func $mem "reset"))))
  (func $handle (param "state" (option (list u8))) (param "params" (tuple u64 $http-request))
    (result (result (tuple (option (list u8)) (tuple $http-response)) (error string)))
    (canon lift (core func $a "handle-request") (memory $memory) (realloc $realloc)
      (post-return (core func $mem "reset"))))

  (instance $actor-exports (export "init" (func $init)))
  (instance $handler-exports
    (export "http-request" (type $http-request))
    (export "http-response" (type $http-response))
    (export "handle-request" (func $handle)))
  (export "theater:simple/actor" (instance $actor-exports))
  (export "theater:simple/http-handlers" (instance $handler-exports))
)
