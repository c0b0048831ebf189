"""Regenerates the generated files under protos/ from the descriptors that published Python wheels carry
(the .proto sources themselves are not shipped in any package on PyPI or npm): Triton's grpc_service.proto
from tritonclient (the subset `ml serve` answers) and TF Serving's apis/*.proto from tensorflow-serving-api.
Field names, types and numbers therefore match the published protos exactly.

  pip download --no-deps tensorflow-serving-api==2.21.0 && unzip tensorflow_serving_api-*.whl -d tfs
  PYTHONPATH=tfs <peers venv>/bin/python scripts/protos/generate.py <repository>/protos/

Runs in the Python peers' venv (scripts/peers/python.sh: tritonclient, protobuf). The copied TensorFlow
files (tensorflow/core/framework, example) and the reduced meta_graph.proto are not generated here.
The license header of protos/grpc_service.proto (BSD-3-Clause, NVIDIA) is added by hand after generation.
"""
import importlib
import sys
from google.protobuf import runtime_version as _rv
_rv.ValidateProtobufRuntimeVersion = lambda *a, **k: None
from google.protobuf import descriptor_pb2 as d

T = d.FieldDescriptorProto
SCALAR = {T.TYPE_DOUBLE:'double',T.TYPE_FLOAT:'float',T.TYPE_INT64:'int64',T.TYPE_UINT64:'uint64',T.TYPE_INT32:'int32',
  T.TYPE_FIXED64:'fixed64',T.TYPE_FIXED32:'fixed32',T.TYPE_BOOL:'bool',T.TYPE_STRING:'string',T.TYPE_BYTES:'bytes',
  T.TYPE_UINT32:'uint32',T.TYPE_SFIXED32:'sfixed32',T.TYPE_SFIXED64:'sfixed64',T.TYPE_SINT32:'sint32',T.TYPE_SINT64:'sint64'}

def tname(f, pkg):
    if f.type in SCALAR: return SCALAR[f.type]
    n = f.type_name
    if n.startswith('.' + pkg + '.'): return n[len(pkg)+2:]
    return n[1:]

def opts(f):
    o = []
    if f.options.HasField('packed'): o.append('packed = %s' % ('true' if f.options.packed else 'false'))
    if f.options.deprecated: o.append('deprecated = true')
    return (' [' + ', '.join(o) + ']') if o else ''

def msg(m, pkg, ind, keep_fields=None):
    out = []
    p = '  ' * ind
    out.append(p + 'message %s {' % m.name)
    maps = {n.name: n for n in m.nested_type if n.options.map_entry}
    for e in m.enum_type: out += enum(e, ind + 1)
    for n in m.nested_type:
        if not n.options.map_entry: out += msg(n, pkg, ind + 1)
    oneofs = {}
    for f in m.field:
        if f.HasField('oneof_index') and not f.proto3_optional: oneofs.setdefault(f.oneof_index, []).append(f)
    done = set()
    for f in m.field:
        if keep_fields is not None and f.name not in keep_fields: continue
        if f.HasField('oneof_index') and not f.proto3_optional:
            i = f.oneof_index
            if i in done: continue
            done.add(i)
            out.append(p + '  oneof %s {' % m.oneof_decl[i].name)
            for g in oneofs[i]:
                if keep_fields is not None and g.name not in keep_fields: continue
                out.append(p + '    %s %s = %d%s;' % (tname(g, pkg), g.name, g.number, opts(g)))
            out.append(p + '  }')
            continue
        lab = ''
        tn = tname(f, pkg)
        short = f.type_name.split('.')[-1]
        if f.label == T.LABEL_REPEATED and short in maps and f.type == T.TYPE_MESSAGE:
            me = maps[short]
            tn = 'map<%s, %s>' % (tname(me.field[0], pkg), tname(me.field[1], pkg))
        elif f.label == T.LABEL_REPEATED: lab = 'repeated '
        elif f.proto3_optional: lab = 'optional '
        out.append(p + '  %s%s %s = %d%s;' % (lab, tn, f.name, f.number, opts(f)))
    for r in m.reserved_range:
        out.append(p + '  reserved %s;' % (str(r.start) if r.end == r.start + 1 else '%d to %d' % (r.start, r.end - 1)))
    for n in m.reserved_name: out.append(p + '  reserved "%s";' % n)
    out.append(p + '}')
    return out

def enum(e, ind):
    p = '  ' * ind
    out = [p + 'enum %s {' % e.name]
    if e.options.allow_alias: out.append(p + '  option allow_alias = true;')
    for v in e.value: out.append(p + '  %s = %d;' % (v.name, v.number))
    out.append(p + '}')
    return out

def main(module, only_messages=None, only_methods=None, imports_override=None):
    mod = importlib.import_module(module)
    fd = d.FileDescriptorProto.FromString(mod.DESCRIPTOR.serialized_pb)
    out = ['syntax = "%s";' % (fd.syntax or 'proto2'), '', 'package %s;' % fd.package, '']
    for dep in (imports_override if imports_override is not None else fd.dependency): out.append('import "%s";' % dep)
    if fd.dependency: out.append('')
    o = fd.options
    for k in ['java_package','go_package','csharp_namespace','objc_class_prefix']:
        if o.HasField(k): out.append('option %s = "%s";' % (k, getattr(o, k)))
    for k in ['java_multiple_files','cc_enable_arenas']:
        if o.HasField(k): out.append('option %s = %s;' % (k, 'true' if getattr(o, k) else 'false'))
    if o.HasField('java_outer_classname'): out.append('option java_outer_classname = "%s";' % o.java_outer_classname)
    out.append('')
    for e in fd.enum_type: out += enum(e, 0) + ['']
    for m in fd.message_type:
        if only_messages is not None and m.name not in only_messages: continue
        out += msg(m, fd.package, 0, only_messages.get(m.name) if only_messages else None) + ['']
    for s in fd.service:
        out.append('service %s {' % s.name)
        for me in s.method:
            if only_methods is not None and me.name not in only_methods: continue
            cs = 'stream ' if me.client_streaming else ''
            ss = 'stream ' if me.server_streaming else ''
            out.append('  rpc %s(%s%s) returns (%s%s) {}' % (me.name, cs, me.input_type.split('.')[-1] if me.input_type.startswith('.'+fd.package+'.') else me.input_type[1:], ss, me.output_type.split('.')[-1] if me.output_type.startswith('.'+fd.package+'.') else me.output_type[1:]))
        out.append('}')
        out.append('')
    return fd.name, '\n'.join(out)

out = sys.argv[1]
def hdr(src, note=''):
    return ('// Generated from the descriptor of %s as published in the tensorflow-serving-api 2.21.0 wheel on PyPI\n'
            '// (source: https://github.com/tensorflow/serving/blob/2.21.0/%s, Apache-2.0): names, types and field\n'
            '// numbers are exactly the published ones; comments were not carried over.%s\n') % (src, src, note)
for m in ['predict', 'model', 'classification', 'input', 'get_model_metadata']:
    name, text = main('tensorflow_serving.apis.%s_pb2' % m)
    open(out + name, 'w').write(hdr(name) + text.rstrip() + '\n')
name, text = main('tensorflow_serving.apis.prediction_service_pb2', only_methods={'Classify', 'Predict', 'GetModelMetadata'},
    imports_override=['tensorflow_serving/apis/classification.proto', 'tensorflow_serving/apis/get_model_metadata.proto', 'tensorflow_serving/apis/predict.proto'])
open(out + name, 'w').write(hdr(name, '\n// The service lists the methods `ml serve` answers (Classify, Predict, GetModelMetadata); Regress and\n// MultiInference, left out with their request files, are answered UNIMPLEMENTED.') + text.rstrip() + '\n')
keep = ['ServerLiveRequest','ServerLiveResponse','ServerReadyRequest','ServerReadyResponse','ModelReadyRequest','ModelReadyResponse',
 'ServerMetadataRequest','ServerMetadataResponse','ModelMetadataRequest','ModelMetadataResponse','InferParameter','InferTensorContents',
 'ModelInferRequest','ModelInferResponse','RepositoryIndexRequest','RepositoryIndexResponse']
name, text = main('tritonclient.grpc.service_pb2', only_messages={k: None for k in keep},
    only_methods={'ServerLive','ServerReady','ModelReady','ServerMetadata','ModelMetadata','ModelInfer','RepositoryIndex'}, imports_override=[])
h = ('// The KServe V2 / Open Inference Protocol gRPC service (package inference, service GRPCInferenceService),\n'
     '// generated from the descriptor of Triton\'s grpc_service.proto as published in the tritonclient 2.55.0 wheel\n'
     '// on PyPI (source: https://github.com/triton-inference-server/common/blob/r25.02/protobuf/grpc_service.proto,\n'
     '// BSD-3-Clause; KServe\'s copy: https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/open_inference_grpc.proto).\n'
     '// Names, types and field numbers are exactly the published ones; comments were not carried over. Only the\n'
     '// methods `ml serve` answers, and their messages, are listed (Triton\'s streaming, statistics, shared-memory,\n'
     '// trace and log methods are answered UNIMPLEMENTED).\n')
open(out + 'grpc_service.proto', 'w').write(h + text.rstrip() + '\n')
